"""The on-device agent: live loop, escalation of incidents to the fleet over MQTT, status."""
