"""The notebooks' checks cells: claims asserted, numbers within bands, output the same on every machine."""
import json
import math

import pytest

from revq_core.paper.verdict import Verdict
from revq_core.utils.threads import cpu_threads


def test_passing_checks_print_only_claims_and_bands(capsys):
    verdict = Verdict("05_train")
    verdict.claim("the rectifier helps", True)
    verdict.near("PSNR Y, dB", 28.6912345, committed=28.69, tolerance=0.3)
    verdict.near("latent MSE", 0.05471, committed=0.0547, relative=0.03)
    verdict.report()
    printed = capsys.readouterr().out
    assert printed.splitlines() == ["ok    claim: the rectifier helps", "ok    PSNR Y, dB within 28.69 +- 0.3",
                                    "ok    latent MSE within 0.0547 +- 3%"]
    assert "28.6912" not in printed  # the measured digits are machine-dependent: never printed on success


def test_the_printed_text_does_not_depend_on_the_measured_value(capsys):
    outputs = []
    for value in (28.50, 28.98):
        verdict = Verdict("05_train")
        verdict.near("PSNR Y, dB", value, committed=28.69, tolerance=0.3)
        verdict.report()
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1]


@pytest.mark.parametrize("value", [28.38, 29.0, math.nan, math.inf])
def test_a_number_outside_its_band_fails_naming_notebook_number_value_and_band(value):
    verdict = Verdict("05_train")
    assert not verdict.near("PSNR Y, dB", value, committed=28.69, tolerance=0.3)
    with pytest.raises(AssertionError) as failure:
        verdict.report()
    message = str(failure.value)
    assert message.startswith("05_train: 1 check(s) failed")
    assert "PSNR Y, dB" in message and "28.69 +- 0.3" in message and "[28.39, 28.99]" in message
    assert f"{value:.6g}" in message


def test_relative_band_edges():
    verdict = Verdict("x")
    assert verdict.near("a", 1.049, committed=1.0, relative=0.05)
    assert not verdict.near("b", 1.051, committed=1.0, relative=0.05)
    assert verdict.near("c", -0.951, committed=-1.0, relative=0.05)  # the band is relative to |committed|


def test_a_failed_claim_fails_with_its_detail():
    verdict = Verdict("04_split_axis")
    verdict.claim("channel < spatial at T = 512", False, detail="0.13 vs 0.12")
    with pytest.raises(AssertionError, match=r"04_split_axis: .*channel < spatial at T = 512 \(0.13 vs 0.12\)"):
        verdict.report()


def test_not_strict_reports_without_raising(capsys):
    verdict = Verdict("05_train", strict=False)
    verdict.claim("the rectifier helps", False)
    verdict.report()
    assert "1 check(s) failed (not asserted" in capsys.readouterr().out


def test_other_parameters_check_claims_but_not_committed_numbers(capsys):
    verdict = Verdict("05_train", compare_committed=False)
    assert verdict.near("PSNR Y, dB", 12.0, committed=28.69, tolerance=0.3)
    verdict.claim("holds", False)
    with pytest.raises(AssertionError, match="claim does not hold: holds"):
        verdict.report()
    assert "PSNR Y, dB: not compared" in capsys.readouterr().out


def test_band_argument_must_be_one_of_two():
    with pytest.raises(ValueError, match="exactly one of"):
        Verdict("x").near("a", 1.0, committed=1.0)
    with pytest.raises(ValueError, match="exactly one of"):
        Verdict("x").near("a", 1.0, committed=1.0, tolerance=0.1, relative=0.1)


def test_measured_numbers_are_logged_for_the_spread(tmp_path, monkeypatch):
    log = tmp_path / "spread.jsonl"
    monkeypatch.setenv("REVQ_VERDICT_LOG", str(log))
    monkeypatch.setenv("REVQ_CPU_KERNEL", "0")
    for value in (0.0547, 0.0549):
        verdict = Verdict("05_train")
        verdict.near("latent MSE", value, committed=0.0547, relative=0.03)
        verdict.report()
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [record["measured"]["latent MSE"]["value"] for record in records] == [0.0547, 0.0549]
    assert records[0]["cpu_kernel"] == "0" and records[0]["measured"]["latent MSE"]["committed"] == 0.0547


def test_thread_count_from_the_environment(monkeypatch):
    monkeypatch.delenv("REVQ_NUM_THREADS", raising=False)
    assert cpu_threads(3) == 3 and cpu_threads() is None
    monkeypatch.setenv("REVQ_NUM_THREADS", "1")
    assert cpu_threads(2) == 1
    monkeypatch.setenv("REVQ_NUM_THREADS", "two")
    with pytest.raises(ValueError, match="REVQ_NUM_THREADS must be a positive integer"):
        cpu_threads()


def test_a_relative_band_below_one_percent_is_printed_as_it_is(capsys):
    verdict = Verdict("07_codebook_scaling")
    verdict.near("MSE", 0.2724, committed=0.2724, relative=0.005)
    verdict.report()
    assert capsys.readouterr().out.strip() == "ok    MSE within 0.2724 +- 0.5%"
