"""End-to-end flows built from the rest of crowdmed: the AggNet crowd loop and the demo.

Modules here import torch only inside the functions that train (``pip install 'crowdmed[torch]'``).
"""
