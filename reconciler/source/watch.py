"""Watch a local repository's refs, so a commit there is picked up at once."""

from __future__ import annotations

from collections.abc import Callable

from watchdog.events import (
    EVENT_TYPE_CLOSED,
    EVENT_TYPE_CREATED,
    EVENT_TYPE_DELETED,
    EVENT_TYPE_MOVED,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer

# Only writes move a ref. Opens and reads must not count: the daemon reads the refs on every
# pass, and reacting to that would poke the next pass forever.
REF_WRITES = {EVENT_TYPE_CREATED, EVENT_TYPE_DELETED, EVENT_TYPE_MOVED, EVENT_TYPE_CLOSED}


class _OnRefChange(FileSystemEventHandler):
    def __init__(self, callback: Callable[[], None]):
        self.callback = callback

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type not in REF_WRITES or event.is_directory:
            return
        path = str(event.src_path) + " " + str(getattr(event, "dest_path", "") or "")
        if "/refs/" in path or "packed-refs" in path or path.rstrip().endswith("HEAD"):
            self.callback()


class RefWatcher:
    """Calls `callback` when anything under a git directory's refs changes."""

    def __init__(self, git_dir: str, callback: Callable[[], None]):
        self.observer = Observer()
        self.observer.schedule(_OnRefChange(callback), git_dir, recursive=True)

    def start(self) -> RefWatcher:
        self.observer.daemon = True
        self.observer.start()
        return self

    def stop(self) -> None:
        self.observer.stop()
        self.observer.join(timeout=5)
