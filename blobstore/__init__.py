"""A generic, crash-safe store of named blobs inside raw or qcow2 disk images (issue 3)."""
