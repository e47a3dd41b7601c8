//! The `runnel` command as a user runs it.
