"""The NumPy parts of crowdmed.pathology import and run without torch."""

import subprocess
import sys

CODE = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'matplotlib', 'monai', 'torchvision'):
            raise ImportError('blocked ' + name)
        return None
sys.meta_path.insert(0, Block())
import crowdmed.pathology as m
f = m.make_synthetic_fields(1, size=(64, 64), random_state=0)
import crowdmed.metrics
r = crowdmed.metrics.match_points(f.points.assign(score=1.0), f.points)
assert r.f1 == 1.0
try:
    m.AggNetCNN
except ImportError as exc:
    assert "crowdmed[torch]" in str(exc)
else:
    raise SystemExit("AggNetCNN imported without torch")
print('ok')
"""


def test_numpy_parts_import_without_torch():
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
