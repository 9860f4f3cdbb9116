"""Kernel channels that never sleep through a message.

A kernel client waits for a message by polling its zmq socket on the event loop. Now and then the
loop misses the socket's wake-up (its file descriptor is edge-triggered): the message sits in the
socket while the client sleeps until its timeout, the whole cell timeout, and only then finds it.
We saw it in lecture 4 and 5, under nbclient, as a cell that took 300 s instead of 5; nbclient#312
(https://github.com/jupyter/nbclient/issues/312) reports the same with widgets. :class:`SteppedChannel`
polls in steps of at most :data:`STEP` seconds, and pyzmq checks the socket itself at the end of each
step, so a missed wake-up costs at most a step.
"""
from __future__ import annotations

import time
from queue import Empty
from typing import Any

from jupyter_client import AsyncKernelClient, AsyncKernelManager
from jupyter_client.channels import AsyncZMQSocketChannel
from traitlets import DottedObjectName, Type

__all__ = ["STEP", "SteppedChannel", "SteppedKernelClient", "SteppedKernelManager"]

STEP = 1.0  # seconds


class SteppedChannel(AsyncZMQSocketChannel):
    """``get_msg(timeout)`` as jupyter_client's, polling in steps of at most :data:`STEP` seconds."""

    async def get_msg(self, timeout: float | None = None) -> dict[str, Any]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = STEP if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                return await super().get_msg(timeout=min(STEP, left))
            except Empty:  # the last step is final: pyzmq rounds it down to whole ms, so never poll again after it
                if deadline is not None and (left <= STEP or time.monotonic() >= deadline):
                    raise


class SteppedKernelClient(AsyncKernelClient):
    """jupyter_client's asynchronous client with :class:`SteppedChannel` for shell and iopub."""

    shell_channel_class = Type(SteppedChannel)
    iopub_channel_class = Type(SteppedChannel)


class SteppedKernelManager(AsyncKernelManager):
    """jupyter_client's asynchronous kernel manager whose clients are :class:`SteppedKernelClient`
    (for nbclient's ``kernel_manager_class``)."""

    client_class = DottedObjectName(f"{__name__}.SteppedKernelClient")
    client_factory = Type(SteppedKernelClient)
