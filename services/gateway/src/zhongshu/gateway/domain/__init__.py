"""Pure decisions (no I/O): schedule cadences and cursors. Whether a workflow or a trigger is
usable is `contracts.validation`, the check the task engine runs too."""
