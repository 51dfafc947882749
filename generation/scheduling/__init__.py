"""Fair, batched scheduling of jobs onto an engine: the queue, the bookkeeping, one batch's run."""
