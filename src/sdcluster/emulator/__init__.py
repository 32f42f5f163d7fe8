"""A local emulator of the slice of Google Cloud (and of GKE's Kubernetes API) that sdcluster uses.

Example::

    from sdcluster.emulator import Emulator
    with Emulator(operation_s=0.2, iam_propagation_s=1) as emu:
        print(emu.address)   # export SDCLUSTER_EMULATOR=<this>
"""

from .server import Emulator, serve

__all__ = ["Emulator", "serve"]
