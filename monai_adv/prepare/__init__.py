"""Preparation of the public data sets from their publishers' layouts, and of a user's own images, into MONAI data
lists.

One module per data set (``lidc``, ``cbis_ddsm``, ``brain_mri``, ``mnist``, ``cifar10``), and ``folder`` for a
labelled folder tree or table of one's own images, each with ``prepare(source_dir, output_dir, seed=0, ...) -> Path``
that writes ``output_dir/images/`` and ``output_dir/datalist.json`` and returns the data list path. Patient
identifiers are stored pseudonymised.
"""

from monai_adv.prepare.common import summarise

__all__ = ["summarise", "lidc", "cbis_ddsm", "brain_mri", "mnist", "cifar10", "folder"]
