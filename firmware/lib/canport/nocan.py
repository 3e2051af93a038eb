# Stands in for the CAN controller while none could be brought up (no
# MCP2515 answering on SPI, a firmware without machine.CAN): the BMS side
# and the console keep working, and BusOffRecovery keeps calling restart(),
# which tries to build the real port again (docs/design.md "CAN port").

from canport import base


class NoCan:
    tx_queue_len = 0

    def __init__(self, build):
        self._build = build
        self.port = None
        self._filters = None  # applied to the port once it exists

    def send(self, can_id, data, flags=0):
        if self.port is None:
            raise OSError(base.ENODEV)
        return self.port.send(can_id, data, flags)

    def cancel_send(self, idx):
        if self.port is not None:
            self.port.cancel_send(idx)

    def recv(self, arg=None):
        return None if self.port is None else self.port.recv(arg)

    def state(self):
        return base.STATE_STOPPED if self.port is None else self.port.state()

    def restart(self):
        if self.port is None:
            port = self._build()  # raises while still absent
            if self._filters is not None:
                port.set_filters(self._filters)
            self.port = port
        else:
            self.port.restart()

    def set_filters(self, filters):
        self._filters = filters
        if self.port is not None:
            self.port.set_filters(filters)

    def get_counters(self, lst=None):
        if self.port is None:
            return [0, 0, 0, 0, 0, 0, 0, 0]
        return self.port.get_counters(lst)

    def deinit(self):
        if self.port is not None:
            self.port.deinit()
