"""benchmarks/under_load.py's check that its --realtime level had the cores: another
process's thread under SCHED_FIFO at its priority or above is seen."""
import os
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "benchmarks"))
import under_load  # noqa: E402


def test_others_realtime_sees_a_fifo_process():
    rival = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        try:
            os.sched_setscheduler(rival.pid, os.SCHED_FIFO, os.sched_param(under_load.RT_PRIORITY))
        except (PermissionError, AttributeError):
            pytest.skip("SCHED_FIFO needs root on Linux")
        assert under_load.others_realtime()
    finally:
        rival.kill()
        rival.wait()
