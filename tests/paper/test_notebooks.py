"""Every notebook is a jupytext pair (.py percent beside .ipynb) whose cells agree, with one
``parameters`` cell. Executing them is ``pytest --nbval`` (see pyproject.toml and the README)."""
from pathlib import Path

import jupytext
import pytest

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
PY_FILES = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.py"))
IPYNB_FILES = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
EXPECTED = ["01_flops", "02_noise_tolerance", "03_toy_2d", "04_split_axis", "05_train", "06_tables",
            "07_codebook_scaling", "08_baselines", "09_generation"]


def _cells(notebook) -> list[tuple[str, str]]:
    return [(cell.cell_type, cell.source.strip()) for cell in notebook.cells if cell.source.strip()]


def test_every_paper_section_has_a_notebook():
    assert [path.stem for path in PY_FILES] == EXPECTED


def test_every_ipynb_has_a_py_twin_and_back():
    assert {path.stem for path in PY_FILES} == {path.stem for path in IPYNB_FILES}


@pytest.mark.parametrize("py_path", PY_FILES, ids=lambda path: path.stem)
def test_py_and_ipynb_cells_agree(py_path):
    from_py = jupytext.read(py_path)
    from_ipynb = jupytext.read(py_path.with_suffix(".ipynb"))
    assert _cells(from_py) == _cells(from_ipynb), (
        f"{py_path.name} and its .ipynb differ: run `python scripts/execute_notebooks.py {py_path.relative_to(NOTEBOOKS.parent)}`")


@pytest.mark.parametrize("py_path", PY_FILES, ids=lambda path: path.stem)
def test_one_parameters_cell_and_it_comes_first_in_code(py_path):
    notebook = jupytext.read(py_path)
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    tagged = [cell for cell in code_cells if "parameters" in cell.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{py_path.name} needs exactly one cell tagged 'parameters'"


@pytest.mark.parametrize("py_path", PY_FILES, ids=lambda path: path.stem)
def test_notebook_is_executed_and_opens_with_the_claim(py_path):
    notebook = jupytext.read(py_path.with_suffix(".ipynb"))
    assert notebook.cells[0].cell_type == "markdown", "open with the paper's claim in markdown"
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(cell.get("execution_count") for cell in code_cells), (
        f"{py_path.stem}.ipynb has unexecuted cells: run `python scripts/execute_notebooks.py`")
