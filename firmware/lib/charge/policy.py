# Every safety decision about what the inverter is told, in one place
# (docs/charge-control.md): the limits from the BMS (charge.limits), the
# link-loss policy and the enable flags. The protocol encoders only place
# these values into frames.
#
#   WAIT (no complete data set yet)  -> send nothing
#   STALE, link_loss "stop"          -> send nothing
#   STALE, link_loss "zeros"         -> CCL = DCL = 0, both enables off, and
#                                       the LINK_LOST flag (the encoders map
#                                       it to their communication-fault bits)
#   FRESH                            -> the limits from charge.limits
# charge_enable = CCL > 0; discharge_enable = DCL > 0 and the pack is above
# DVL. Allocation-free per call.

from charge import limits as L
from pack import flags as F
from sources.base import STALE, WAIT


class ChargePolicy:
    def __init__(self, cfg):
        self.stop_on_loss = cfg["link_loss"] == "stop"
        lc = L.LimitConfig()
        lc.bulk_cell_mv = cfg["bulk_cell_mv"]
        lc.max_charge_da = cfg["max_charge_a"] * 10
        lc.max_discharge_da = cfg["max_discharge_a"] * 10
        self.lcfg = lc
        self.lim = L.Limits()
        self.link_lost = False  # the last decision was made on stale data
        self.stopped = False  # ... and the "stop" policy held the frames back

    def decide(self, snap, state):
        """Fill self.lim for a link state (sources.base WAIT / FRESH /
        STALE); True when a frame set is to be sent."""
        lim = self.lim
        if state == WAIT:
            lim.ccl_da = lim.dcl_da = 0
            lim.charge_reason = lim.discharge_reason = L.NO_DATA
            lim.charge_enable = lim.discharge_enable = False
            return False
        stale = state == STALE
        self.link_lost = stale
        self.stopped = stale and self.stop_on_loss
        L.compute(snap, self.lcfg, lim)
        lim.flags = snap.flags
        if stale:
            lim.ccl_da = lim.dcl_da = 0
            lim.charge_reason = lim.discharge_reason = L.STALE
            lim.flags |= F.LINK_LOST
        lim.charge_enable = lim.ccl_da > 0
        lim.discharge_enable = lim.dcl_da > 0 and snap.pack_mv > lim.dvl_dv * 100
        return not self.stopped
