"""Running one model over several processes (torch.distributed): sequence parallelism."""

from sanawm.parallel.sequence import RowShard, SequenceParallel, local_device

__all__ = ["RowShard", "SequenceParallel", "local_device"]
