"""`keel loadtest`: replay a traffic profile at 1×, 2×, 5×, 10× against a Keel whose providers are
simulated, and report what breaks first and at which multiple. Traffic only to loopback addresses;
every phase bounded in time."""
