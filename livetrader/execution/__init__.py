"""How a decision becomes orders on an exchange (docs/behaviour.md §12): the broker (the
exchange side, ``broker``) and each pair's order state (``executor``). Paper mode places no
order and uses none of this."""
