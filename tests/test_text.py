"""Text normalisation and the support check live in lacy.data, written once."""

import doctest
import subprocess
import sys

import lacy.data.text as text_module
from lacy.evaluate import calls, factscore


def test_doctests_pass():
    assert doctest.testmod(text_module).failed == 0


def test_one_definition_shared_by_the_metrics():
    assert factscore.normalize is text_module.normalize
    assert calls.word_supported is text_module.word_supported


def test_data_audit_does_not_import_the_evaluation():
    code = "import sys, lacy.data.proxy_audit; print(any(m.startswith('lacy.evaluate') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
