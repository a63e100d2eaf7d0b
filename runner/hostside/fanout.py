"""A function over work items in worker processes, results in the items' order. Standard library
only, Python >= 3.7.

The dataset check is Python parsing numbers (the GIL holds threads to one core) between small reads;
worker processes make it scale with the host's cores. Where processes cannot be had (no fork on this
platform, no POSIX semaphores in a locked-down container) the items run here, one after another.
"""

import multiprocessing
import os

MAX_WORKERS = 8  # the host may be training another job meanwhile: a preflight should not take it all


def default_workers():
    try:
        cores = len(os.sched_getaffinity(0))  # what this process may use (taskset, cpusets)
    except AttributeError:
        cores = os.cpu_count() or 1
    return max(1, min(cores, MAX_WORKERS))


def ordered_map(function, items, workers):
    """[function(item) for item in items], in up to `workers` processes. function must be a
    module-level function (it is sent to the workers by name)."""
    if workers <= 1 or len(items) <= 1:
        return [function(item) for item in items]
    pool = _pool(min(workers, len(items)))
    if pool is None:
        return [function(item) for item in items]
    try:
        results = list(pool.imap(function, items))
        pool.close()
        return results
    finally:
        pool.terminate()  # also on Ctrl-C or an error: no worker outlives the check
        pool.join()


def _pool(workers):
    if "fork" not in multiprocessing.get_all_start_methods():
        return None  # spawn would re-import this module in each worker: slower than no workers
    try:
        return multiprocessing.get_context("fork").Pool(workers)
    except (OSError, ImportError):  # no /dev/shm, no sem_open
        return None
