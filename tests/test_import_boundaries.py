"""Truth inference must not import torch or matplotlib (installs in seconds, imports fast)."""

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
import numpy as np
import crowdmed, crowdmed.aggregation, crowdmed.data, crowdmed.quality
crowdmed.DawidSkene().fit(np.array([[0, 1, 1], [1, 1, 0]]))
print('ok')
"""


def test_core_imports_without_torch_or_matplotlib():
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
