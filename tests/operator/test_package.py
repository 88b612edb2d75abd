"""The operator package stays free of torch and never shadows the standard library's `operator`."""

from __future__ import annotations

import subprocess
import sys


def test_operator_package_imports_without_torch_and_leaves_stdlib_operator_alone():
    code = ("import sys, operator, voice_operator.__main__, voice_operator.handlers, chatterbox_voicefile; "
            "assert operator.add(2, 3) == 5 and operator.__file__.startswith(sys.base_prefix); "
            "assert 'torch' not in sys.modules, 'voice_operator imported torch'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
