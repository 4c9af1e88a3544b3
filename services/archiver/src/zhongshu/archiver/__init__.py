"""The archiver: every stream drained into monthly, compressed JSON Lines in object storage,
with a per-month manifest; verified and restored by ``zhongshu archive``."""
