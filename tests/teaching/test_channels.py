"""Kernel channels that never sleep through a message (retrievalkit.teaching.channels), on real zmq sockets."""
import asyncio
import os
import time
from queue import Empty

import pytest
import zmq
import zmq.asyncio
from jupyter_client.channels import AsyncZMQSocketChannel
from jupyter_client.session import Session

from retrievalkit.teaching import channels


async def _pair(cls):
    """A channel of class ``cls`` on a socket, the peer that sends to it (a blocking socket), and its session."""
    a = zmq.asyncio.Context.instance().socket(zmq.PAIR)
    port = a.bind_to_random_port("tcp://127.0.0.1")
    b = zmq.Context.instance().socket(zmq.PAIR)
    b.connect(f"tcp://127.0.0.1:{port}")
    session = Session(key=b"")
    channel = cls(a, session)
    session.send(b, "ping", content={})
    assert (await channel.get_msg(timeout=5))["msg_type"] == "ping"  # connected
    return channel, a, b, session


async def _missed_wakeup(cls, timeout: float) -> tuple[str, float]:
    """A message that arrives while get_msg waits, whose wake-up the event loop misses: someone reads the socket's
    events (as a send on the same socket does) before the loop's reader runs. Returns what get_msg got and when."""
    channel, a, b, session = await _pair(cls)
    try:
        start = time.monotonic()
        waiting = asyncio.ensure_future(channel.get_msg(timeout=timeout))
        await asyncio.sleep(0.1)  # the poll is registered
        session.send(b, "pong", content={})
        time.sleep(0.2)  # the message is in the socket; the loop is blocked, its reader has not run
        zmq.Socket.shadow(a.underlying).get(zmq.EVENTS)  # the edge is consumed
        try:
            got = (await waiting)["msg_type"]
        except Empty:
            got = "nothing"
        return got, time.monotonic() - start
    finally:
        a.close(0)
        b.close(0)


def test_a_missed_wakeup_costs_a_step_not_the_timeout():
    got, took = asyncio.run(_missed_wakeup(AsyncZMQSocketChannel, timeout=4))
    assert got == "pong" and took > 3.9  # jupyter_client's channel sleeps through it: the whole timeout (the miss is real)
    got, took = asyncio.run(_missed_wakeup(channels.SteppedChannel, timeout=4))
    assert got == "pong" and took < channels.STEP + 0.8  # found at the end of the first step


@pytest.mark.parametrize("timeout, low, high", [(0, 0.0, 0.2), (2.5, 2.4, 3.0)])
def test_the_timeout_is_kept_across_steps(timeout, low, high):
    async def wait_on_nothing():
        channel, a, b, _ = await _pair(channels.SteppedChannel)
        try:
            start = time.monotonic()
            with pytest.raises(Empty):
                await channel.get_msg(timeout=timeout)
            return time.monotonic() - start
        finally:
            a.close(0)
            b.close(0)

    assert low <= asyncio.run(wait_on_nothing()) < high


class _Counted(AsyncZMQSocketChannel):
    """Counts the polls SteppedChannel makes (it sits between SteppedChannel and jupyter_client's channel)."""

    polls = 0

    async def get_msg(self, timeout=None):
        self.polls += 1
        return await super().get_msg(timeout=timeout)


class _CountedSteps(channels.SteppedChannel, _Counted):
    pass


@pytest.mark.parametrize("timeout, polls", [(0.0009, 1), (2.5, 3), (float("nan"), 1)])
def test_each_step_polls_once_and_the_last_is_final(timeout, polls):
    async def count():
        channel, a, b, _ = await _pair(_CountedSteps)
        try:
            channel.polls = 0
            with pytest.raises(Empty):
                await channel.get_msg(timeout=timeout)
            return channel.polls
        finally:
            a.close(0)
            b.close(0)

    assert asyncio.run(count()) == polls  # 1 s, 1 s, 0.5 s; never a spin of 0-ms polls at the end


def test_without_a_timeout_it_waits_past_many_steps():
    async def late():
        channel, a, b, session = await _pair(channels.SteppedChannel)
        try:
            asyncio.get_running_loop().call_later(2.5 * channels.STEP, lambda: session.send(b, "late", content={}))
            start = time.monotonic()
            msg = await channel.get_msg(timeout=None)
            return msg["msg_type"], time.monotonic() - start
        finally:
            a.close(0)
            b.close(0)

    got, took = asyncio.run(late())
    assert got == "late" and took >= 2.4 * channels.STEP


def test_the_grader_and_the_notebook_runner_get_stepped_channels(tmp_path):
    import nbformat

    from retrievalkit.teaching import kernels, notebooks

    assert issubclass(kernels._KernelClient, channels.SteppedKernelClient)
    kc = channels.SteppedKernelManager().client()
    assert isinstance(kc.shell_channel, channels.SteppedChannel) and isinstance(kc.iopub_channel, channels.SteppedChannel)
    kc.stop_channels()
    path = tmp_path / "one.ipynb"  # the course's runner: its kernel manager, and the kernel shut down afterwards
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("import os; print(os.getpid())")]), path)
    notebooks.execute(path, timeout=60)
    pid = int(nbformat.read(path, as_version=4).cells[0].outputs[0]["text"])
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not os.path.exists(f"/proc/{pid}")
