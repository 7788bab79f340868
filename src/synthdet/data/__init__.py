"""Image sources and splits, decoding, crops and augmentations, the streaming loader, toy data.

Import the submodules directly (``synthdet.data.sources``, ``synthdet.data.loader``...):
the package itself imports nothing, so low layers such as the configuration can use
``synthdet.data.decode`` without pulling in the rest.
"""
