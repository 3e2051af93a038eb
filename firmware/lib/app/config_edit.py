# Config changes while the gateway runs, one set of rules for the console
# (set / save) and the web page (GET / POST /api/config): every value is
# validated as at boot (app.config.check); a charge key applies at once, but
# only after the charge controller's cross-key rules accept it (the
# controller reads its keys every cycle: docs/charge-control.md
# "Parameters"); every other key is pending until a reboot, since the tasks
# it shapes (UART, CAN, protocol, Wi-Fi) are built once at boot. A save
# writes the running config with the pending changes, atomically.
# Imported on use only (like app.config, which app.boot unloads after boot);
# the web page forgets it again after each request (release()).

import json
import sys

from app import config as C
from charge import schema as charge_schema

MASK = "***"  # a secret that is set, as every output shows it; sent back: unchanged


def live(key):
    """True for a key that applies at once (the charge controller's)."""
    return key in charge_schema.SCHEMA


def shown(key, value):
    return MASK if key in C.SECRETS and value else value


def effective(st):
    """What a save writes: the running config with the pending changes."""
    out = {}
    for k in st.cfg:
        out[k] = st.cfg[k]
    for k in st.pending:
        out[k] = st.pending[k]
    return out


def fit_charge(cfg, changes):
    """The charge controller's cross-key rules as at boot (float <= bulk,
    each temperature window non-empty, ...) on cfg with changes: the list of
    what they would correct; empty when the changes may apply."""
    trial = {}
    for k in cfg:
        trial[k] = cfg[k]
    for k in changes:
        trial[k] = changes[k]
    msgs = []
    charge_schema.fit(trial, trial, msgs)  # every key "given": no preset replaces one
    return msgs


def apply_charge(st, changes):
    """Charge keys into the running config and the controller; pending too,
    so a save keeps them and an older pending value cannot win."""
    for k in changes:
        st.cfg[k] = changes[k]
        st.pending[k] = changes[k]
    st.policy.apply(st.cfg)


def save(st, store, name):
    C.save(store, name, effective(st))


def submit(st, store, name, values):
    """The web page's change of several keys at once: all or nothing.
    values: key -> JSON value (MASK for a secret: unchanged). Returns
    (HTTP status, reply): 400 with "errors" when a value is invalid or a
    charge change breaks the cross-key rules (nothing saved, nothing
    applied); 500 when the save fails (nothing applied); else 200 with
    "applied" (in force now), "reboot" (after a reboot) and "messages" (what
    app.config.validate says about the whole config, as at boot)."""
    if not isinstance(values, dict):
        return 400, {"saved": False, "errors": ["config must be an object of key: value"]}
    now = effective(st)
    errors = []
    changes = {}
    for key in sorted(values):
        v = values[key]
        if key in C.SECRETS and v == MASK:
            continue
        try:
            v = C.check(key, v)
        except ValueError as e:
            errors.append("%s: %s" % (key, e.args[0]))
            continue
        if v != now[key]:
            changes[key] = v
    if errors:
        return 400, {"saved": False, "errors": errors}
    if not changes:
        return 200, {"saved": False, "applied": [], "reboot": [], "messages": ["nothing changed"]}
    charge = {}
    for k in changes:
        if live(k):
            charge[k] = changes[k]
    msgs = fit_charge(st.cfg, charge) if charge else []
    if msgs:
        return 400, {"saved": False, "errors": msgs}
    for k in changes:
        now[k] = changes[k]
    messages = []
    C.validate(now, messages)  # the cross-key rules of boot, said; the values are saved as given
    try:
        C.save(store, name, now)
    except (OSError, ValueError) as e:
        return 500, {"saved": False, "errors": ["save failed: %s" % (e,)]}
    if charge:
        apply_charge(st, charge)
    applied = sorted(charge)
    reboot = []
    for k in sorted(changes):
        if k in charge:
            continue
        if changes[k] == st.cfg[k]:
            st.pending.pop(k, None)  # back to the running value: nothing to wait for
            applied.append(k)
        else:
            st.pending[k] = changes[k]
            reboot.append(k)
    return 200, {"saved": True, "applied": applied, "reboot": reboot, "messages": messages}


def describe(st):
    """GET /api/config as JSON text, piece by piece, one key at a time (the
    whole, ~6.5 KB, and a dict of it, as much again, are never in RAM): the
    running config (secrets masked), the pending changes that differ from
    it, the keys that need a reboot, each key's schema [kind, low, high or
    the choices] and the secret keys."""
    cfg = st.cfg
    pend = st.pending
    keys = sorted(C.SCHEMA)
    sep = ""
    yield '{"config": {'
    for k in keys:
        yield "%s%s: %s" % (sep, json.dumps(k), json.dumps(shown(k, cfg[k])))
        sep = ", "
    yield '}, "pending": {'
    sep = ""
    for k in keys:
        if k in pend and pend[k] != cfg[k]:
            yield "%s%s: %s" % (sep, json.dumps(k), json.dumps(shown(k, pend[k])))
            sep = ", "
    yield '}, "reboot": ['
    sep = ""
    for k in keys:
        if not live(k):
            yield sep + json.dumps(k)
            sep = ", "
    yield '], "schema": {'
    sep = ""
    for k in keys:
        kind, low, high = C.SCHEMA[k][1:]
        if isinstance(high, tuple):
            high = list(high)  # the choices
        yield "%s%s: %s" % (sep, json.dumps(k), json.dumps([kind, low, high]))
        sep = ", "
    yield '}, "secrets": %s}' % json.dumps(list(C.SECRETS))


def release():
    """Forget this module, app.config and the schemas (21 KB on the 32-bit
    port: docs/network.md "Web page") unless the console holds them: a
    config request is rare, the RAM is better kept for the rest."""
    mods = sys.modules
    if "outputs.console" in mods:
        return
    for name in C.PARTS + ("app.config", "app.config_edit"):
        if name in mods:
            del mods[name]
            dot = name.rfind(".")
            parent = mods.get(name[:dot])
            if parent is not None:
                try:
                    delattr(parent, name[dot + 1:])
                except AttributeError:
                    pass
