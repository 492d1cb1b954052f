"""Notebook views (issue 10, "What was seen" 8): a Verdict and an Identification render as
HTML in Jupyter, with every value escaped."""

from mlguard.verification.verdict import make_verdict
from mlguard.weights.fingerprints import Identification


def _verdict(**extra):
    return make_verdict("trigger-set", 40, 50, 0.1, 1e-6, "ab" * 32, "cd" * 32, "cpu",
                        extra=extra, file_sha256="ef" * 32)


def test_verdict_repr_html():
    page = _verdict(note="<script>x</script>")._repr_html_()
    assert "DETECTED" in page and "40/50" in page and "ab" * 32 in page and "ef" * 32 in page
    assert "<script>" not in page and "&lt;script&gt;" in page


def test_identification_repr_html():
    found = Identification("<acme>", 1e-20, -46.0, _verdict(), 3)
    page = found._repr_html_()
    assert "&lt;acme&gt;" in page and "among 3" in page and "40/50" in page
    assert "no customer" in Identification(None, 1.0, 0.0, _verdict(), 3)._repr_html_()
