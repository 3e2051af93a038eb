# Config keys of net/ (format: sources.schema; kind "text": any printable
# text of low..high characters). Imported by app.config only, and out of RAM
# again once the config is read. Every network output is off by default and
# needs wifi_ssid (docs/network.md "Configuration").

SCHEMA = {
    "wifi_ssid": ("", "text", 0, 32),  # "": no Wi-Fi, no network output at all
    "wifi_password": ("", "text", 0, 64),
    "mqtt_host": ("", "text", 0, 64),  # "": no MQTT; an IP address avoids a blocking DNS lookup
    "mqtt_port": (1883, "int", 1, 65535),
    "mqtt_user": ("", "text", 0, 64),
    "mqtt_password": ("", "text", 0, 64),
    "mqtt_client_id": ("", "text", 0, 23),  # "": jkgw-<device id>; MQTT 3.1.1 brokers must take 23
    "mqtt_prefix": ("jkgw", "text", 1, 64),  # state on <prefix>/<device id>/state
    "mqtt_interval_s": (10, "int", 1, 3600),
    "mqtt_tls": ("off", "str", None, ("off", "on")),
    "ha_discovery": ("on", "str", None, ("on", "off")),
    "ha_prefix": ("homeassistant", "text", 1, 64),
    "web_port": (0, "int", 0, 65535),  # 0: no web page
    "web_password": ("", "text", 0, 64),  # "": the web page is read-only
    "influx_host": ("", "text", 0, 64),  # "": no InfluxDB lines; UDP, line protocol
    "influx_port": (8089, "int", 1, 65535),
    "influx_interval_s": (10, "int", 1, 3600),
    "influx_measurement": ("jkbms", "text", 1, 32),
}
# never shown (console get, web page, events): the value reads as "***"
SECRETS = ("wifi_password", "mqtt_password", "web_password")
# topic levels and measurement names: no MQTT wildcards, no separators at the ends
_NAMES = ("mqtt_prefix", "ha_prefix", "influx_measurement", "mqtt_client_id")


def check_text(key, value):
    """The key's own rules beyond length and printable (app.config.check)."""
    if key in _NAMES:
        for ch in value:
            if ch in "+#" or ch == " " or (ch == "," and key == "influx_measurement"):
                raise ValueError("must not contain spaces, + or #" +
                                 (" or commas" if key == "influx_measurement" else ""))
        if value.startswith("/") or value.endswith("/"):
            raise ValueError("must not start or end with /")


def _is_ip(host):
    parts = host.split(".")
    if len(parts) != 4:
        return False
    for p in parts:
        if not p or len(p) > 3 or not p.isdigit() or int(p) > 255:
            return False
    return True


def fit(cfg, messages):
    """Cross-key rules: the outputs need Wi-Fi; what a host name costs."""
    wants = cfg["mqtt_host"] or cfg["web_port"] or cfg["influx_host"]
    if not cfg["wifi_ssid"]:
        if wants:
            messages.append("network outputs (mqtt_host, web_port, influx_host) need wifi_ssid: all off")
        return
    for key in ("mqtt_host", "influx_host"):
        if cfg[key] and not _is_ip(cfg[key]):
            # the lookup blocks the whole interpreter, CAN bursts included
            # (docs/network.md "Isolation"): once per boot, then the address is kept
            messages.append("%s %r is a name: its DNS lookup blocks the CAN output until it answers "
                            "(once per boot); an IP address avoids that" % (key, cfg[key]))
    if cfg["web_port"] and not cfg["web_password"]:
        messages.append("web_password is empty: the web page shows the config but takes no changes")
