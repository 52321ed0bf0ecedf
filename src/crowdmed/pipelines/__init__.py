"""End-to-end flows built from the rest of crowdmed: one function per command of the CLI.

``classify``, ``segment``, ``detect`` and ``predict`` train and use networks from files and
folders (``crowdmed train classify | segment | detect``, ``crowdmed predict``); ``aggregate``,
``masks`` and ``boxes`` fuse labels, masks and boxes from files; ``mitosis``, ``crowd`` and
``refine`` make the AggNet mitosis workflow and its crowd loop (``aggnet_loop`` runs it end to
end); ``demo`` writes the demo report. ``records`` checksums inputs and ``model_folder`` saves
a model with the description of its inputs and outputs (``data.json``).

Modules here import torch only inside the functions that train (``pip install 'crowdmed[torch]'``).
"""
