"""Where the Flink job's state lives, which state a start resumes, and one instance per pipeline.

Every start of the job resumes the newest completed savepoint or retained checkpoint of its
own pipeline (the same topics and consumer group), so a stop, a crash or a restart never loses
the minutes that were open or the dedup memory. Starting empty is asked for (`--fresh`).

Only the NEWEST state is ever safe: the sinks' Kafka transactions of every completed checkpoint
are committed, so restoring an older one would publish the clicks after it a second time. A
state that cannot be read is therefore an error, never a reason to fall back to an older one.

"Newest" is the highest checkpoint id, read from each state's _metadata by Flink's own reader,
not the file's modification time: object stores and NFS keep coarse times (chk-9 and chk-10 can
share one) and a copied or touched savepoint gets a new one. Within a pipeline's lineage the ids
only grow: a restored job counts on from the id it restored, and a stop-with-savepoint takes an
id of the same counter. (A start from an older state given by hand, `--from-savepoint`, counts
on from that state's lower id: set the folder aside first, or the newer states that are still
in it win the next start.) The completion time only breaks ties.

Layout under the job's --checkpoint-dir (any Flink file system: file://, s3://, ...):

    <pipeline>/<job id>/chk-<n>/_metadata          retained checkpoints (Flink writes them)
    <pipeline>/savepoints/savepoint-<...>/_metadata savepoints (a clean stop takes one)
    <pipeline>.lock                                 held by a local run while it lives
"""

import re
import time
from dataclasses import dataclass
from datetime import datetime
from datetime import timezone

from py4j.protocol import Py4JJavaError
from pyflink.java_gateway import get_gateway

JOB_ID = re.compile(r"[0-9a-f]{32}")
SAVEPOINTS = "savepoints"
METADATA = "_metadata"


class PipelineBusy(Exception):
    """Another run of the same pipeline is alive (see PipelineState.lock), or whether one is
    cannot be told."""


class UnreadableState(Exception):
    """A completed state whose _metadata Flink cannot read. Its checkpoint id is unknown, so
    which state is the newest cannot be told: the start stops (see the module's docstring)."""

    def __init__(self, path, reason):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def pipeline_name(topic_prefix, group_id):
    """A folder name for one pipeline: its topics (by prefix) and its consumer group."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", f"{topic_prefix}{group_id}")


def state_uri(checkpoint_dir, name):
    """The state folder of pipeline `name` under the job's --checkpoint-dir."""
    return f"{checkpoint_dir.rstrip('/')}/{name}"


def savepoint_uri(state):
    """Where the savepoints of the pipeline whose state folder is `state` go."""
    return f"{state}/{SAVEPOINTS}"


@dataclass(frozen=True)
class SavedState:
    """One completed checkpoint or savepoint: its directory, kind, completion time (its
    _metadata's modification time) and checkpoint id (from that _metadata)."""

    path: str
    kind: str  # "checkpoint" or "savepoint"
    completed_ms: int
    checkpoint_id: int

    def describe(self):
        when = datetime.fromtimestamp(self.completed_ms / 1000, tz=timezone.utc)
        return (f"{self.kind} {self.path} (checkpoint id {self.checkpoint_id}, completed "
                f"{when:%Y-%m-%d %H:%M:%S} UTC)")


class PipelineState:
    """The state folder of one pipeline, read and written through Flink's own file systems."""

    def __init__(self, uri):
        self.uri = uri
        jvm = get_gateway().jvm
        self._jvm = jvm
        self._root = jvm.org.apache.flink.core.fs.Path(self.uri)
        self._fs = self._root.getFileSystem()

    @property
    def savepoint_dir(self):
        return savepoint_uri(self.uri)

    def _children(self, path):
        try:
            return [status for status in self._fs.listStatus(path) or [] if status.isDir()]
        except Py4JJavaError:
            if self._fs.exists(path):
                raise
            return []  # never made, or deleted meanwhile (see _read)

    def _read(self, path, kind, metadata):
        """The SavedState of folder `path`, whose completion is `metadata` (its _metadata): the
        checkpoint id read by Flink's own reader. Raises UnreadableState."""
        jvm = self._jvm
        try:
            completed_ms = self._fs.getFileStatus(metadata).getModificationTime()
            stream = jvm.java.io.DataInputStream(self._fs.open(metadata))
            try:
                loaded = jvm.org.apache.flink.runtime.checkpoint.Checkpoints \
                    .loadCheckpointMetadata(
                        stream, jvm.java.lang.Thread.currentThread().getContextClassLoader(),
                        str(path))
            finally:
                stream.close()
        except Py4JJavaError as error:
            raise UnreadableState(str(path), error.java_exception.toString()) from None
        return SavedState(str(path), kind, completed_ms, int(loaded.getCheckpointId()))

    def saved_states(self):
        """Every completed checkpoint and savepoint of this pipeline, oldest (lowest checkpoint
        id) first; raises UnreadableState if any completed one cannot be read."""
        found = []
        for folder in self._children(self._root):
            name = folder.getPath().getName()
            if name == SAVEPOINTS:
                kind, prefix = "savepoint", "savepoint-"
            elif JOB_ID.fullmatch(name):
                kind, prefix = "checkpoint", "chk-"
            else:
                continue
            for state in self._children(folder.getPath()):
                if not state.getPath().getName().startswith(prefix):
                    continue
                # Flink writes _metadata last: without it the checkpoint never completed.
                metadata = self._jvm.org.apache.flink.core.fs.Path(state.getPath(), METADATA)
                if not self._fs.exists(metadata):
                    continue
                try:
                    found.append(self._read(state.getPath(), kind, metadata))
                except UnreadableState:
                    if self._fs.exists(metadata):
                        raise
                    # Deleted while being read: Flink deletes a checkpoint once a newer state
                    # subsumes it or its job has finished (a stop-with-savepoint's checkpoints
                    # go a moment after the job), so it is not the newest, nor restorable.
        return sorted(found, key=lambda s: (s.checkpoint_id, s.completed_ms, s.path))

    def drop_older_savepoints(self, states=None):
        """Delete every savepoint but the newest (by checkpoint id) among states (default:
        saved_states(), read anew); returns their paths.

        The newest is kept: restored without claiming it, it is the rollback point of the last
        stop or upgrade. The older ones are superseded (only the newest state is ever safe to
        restore), and without this every stop would leave a full copy of the state for good.
        A savepoint is self-contained, so no newer state reads its files.
        """
        states = self.saved_states() if states is None else states
        savepoints = [state for state in states if state.kind == "savepoint"]
        dropped = []
        for old in savepoints[:-1]:
            self._fs.delete(self._jvm.org.apache.flink.core.fs.Path(old.path), True)
            dropped.append(old.path)
        return dropped

    def newest(self):
        """The state a start must resume, or None when the pipeline has never checkpointed."""
        states = self.saved_states()
        return states[-1] if states else None

    def set_aside(self):
        """Move the whole state folder aside (kept, never deleted) for a start from empty;
        returns where it went, or None when there was nothing."""
        if not self._fs.exists(self._root):
            return None
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        target = self._jvm.org.apache.flink.core.fs.Path(f"{self.uri}.before-fresh-{stamp}")
        if not self._fs.rename(self._root, target):
            raise RuntimeError(f"could not move {self.uri} aside to {target}")
        return str(target)

    def lock(self, wait_s):
        """Hold this pipeline's lock for as long as this JVM lives; fail after wait_s.

        A second local run of the same pipeline would read every partition again and publish
        every count twice; and a run killed a moment ago may still be ending (its JVM can
        finish a checkpoint after its Python process died). The lock is taken by the JVM, so it
        is held exactly as long as the job can still run. Only for local (file://) folders.
        """
        if not self.uri.startswith("file:"):
            return None
        # Beside the state folder, not in it: --fresh moves the folder aside while locked.
        local = self._jvm.java.io.File(self._jvm.java.net.URI(f"{self.uri}.lock"))
        local.getParentFile().mkdirs()
        channel = self._jvm.java.io.RandomAccessFile(local, "rw").getChannel()
        deadline = time.monotonic() + wait_s
        while True:
            held = channel.tryLock()
            if held is not None:
                self._held = held  # referenced here, or the JVM could collect and release it
                return held
            if time.monotonic() >= deadline:
                raise PipelineBusy(
                    f"another run of this pipeline holds {local.getPath()} (still running, or "
                    f"still ending after {wait_s} s); two runs would count every click twice")
            time.sleep(0.5)
