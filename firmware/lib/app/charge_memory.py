# What the charge controller must remember across a reboot
# (docs/charge-control.md "State machine"): the seconds since the last full
# charge and since the last top balance, for the re-bulk-after-days rules.
# One short line on flash, written at each end of absorption and every 6 h
# of running (charge.state SAVE_EVERY_S): 4-5 small writes a day. Time the
# gateway is off is not counted (it has no clock that runs while off), so a
# re-bulk by days comes late rather than early.

NAME = "charge.txt"
MAX = 64


def load(store, ctl, events):
    """Restore ctl's counters; a missing file (the first boot) or a damaged
    one starts them at 0, the damaged one with an event (never raises)."""
    from outputs import events as E

    try:
        words = store.read(NAME, MAX).split()
        ctl.restore(int(words[0]), int(words[1]))
    except OSError:
        pass
    except (ValueError, IndexError):
        events.emit(E.CONFIG, "%s unreadable: days since the last full charge counted from now" % NAME)


def save(store, ctl, events):
    ctl.save_due = False
    if store is None:
        return
    try:
        store.write_atomic(NAME, "%d %d\n" % (ctl.full_s, ctl.balance_s))
    except OSError as e:
        from outputs import events as E

        events.emit(E.CONFIG, "%s not written (%r)" % (NAME, e))
