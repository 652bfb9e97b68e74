"""Writing back to git and GitHub: status commits and pull-request reviews."""
