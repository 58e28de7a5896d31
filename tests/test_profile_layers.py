"""The layer classification of `benchmarks/profile_layers.py`, on hand-made perf samples."""

from __future__ import annotations

import importlib.util
from pathlib import Path

_PATH = Path(__file__).resolve().parent.parent / "benchmarks" / "profile_layers.py"
_SPEC = importlib.util.spec_from_file_location("profile_layers", _PATH)
assert _SPEC is not None and _SPEC.loader is not None
profile_layers = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(profile_layers)

PYTHON = "(/usr/lib/libpython3.11.so.1.0)"
CORE = "(/x/_core__mypyc.cpython-311-x86_64-linux-gnu.so)"
KERNEL = "([kernel.kallsyms])"

SCRIPT = f"""
\t    fa978 _Py_dict_lookup {PYTHON}
\t     1234 CPyDef_emitting___Emitting____add_candidate {CORE}
\t     2345 CPyDef_gathering___Gathering___receive_datagram {CORE}
\t     3456 _PyEval_EvalFrameDefault {PYTHON}

\t    ffff1 do_syscall_64 {KERNEL}
\t     5678 __libc_sendto (/lib/libc.so.6)
\t     6789 _PyEval_EvalFrameDefault {PYTHON}

\t    ffff2 clear_page_erms {KERNEL}
\t     1111 CPyDef_stun___parse {CORE}

\t     7777 visit_decref {PYTHON}
\t     8888 gc_collect_main {PYTHON}
\t     9999 _PyEval_EvalFrameDefault {PYTHON}

\t     4444 _PyEval_EvalFrameDefault {PYTHON}
"""


def test_samples_go_to_the_innermost_layer_and_core_function() -> None:
    layers, core, total = profile_layers.classify(SCRIPT)
    assert total == 5
    assert layers == {
        "sans-I/O core": 2,  # a page fault under the core is the core's
        "kernel": 1,
        "garbage collector": 1,
        "interpreter and the rest": 1,
    }
    assert core == {"emitting.Emitting._add_candidate": 1, "stun.parse": 1}


def test_an_empty_script_has_no_samples() -> None:
    assert profile_layers.classify("") == ({}, {}, 0)
