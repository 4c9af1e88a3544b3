"""Pure decisions (no I/O): schedule cadences, workflow graphs, trigger filters, cursors."""
