"""The scale-from-zero gateway: one public port in front of instances it starts and stops."""
