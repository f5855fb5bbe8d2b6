"""Everything that talks to the broker: alert and telemetry payloads, the publisher and its spool, commands, Home Assistant discovery, the fleet monitor."""
