"""Views are presentation only: importing them loads no torch and no model code."""
import subprocess
import sys


def test_views_import_no_torch():
    code = ("import sys, views.common, views.logit_lens, views.attention, views.attribution, views.drift, "
            "views.detector, views.decoding; bad = [m for m in ('torch', 'transformers', 'studio.engine.session') "
            "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
