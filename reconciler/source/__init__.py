"""Where workspaces come from: a git repository, webhooks that say it moved, a file watcher."""
