# The network outputs (docs/network.md): Wi-Fi, MQTT with Home Assistant
# discovery, the web page with its JSON API, InfluxDB lines. Nothing here is
# imported unless wifi_ssid is set (app.gateway builds net.hub.Net then);
# app.config reads net.schema at boot, so this file stays empty.
