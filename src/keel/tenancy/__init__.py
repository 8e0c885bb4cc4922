"""Tenancy: who may do what to which tenant's data.

Users belong to tenants (and teams within them) and hold roles; an `Actor` is whoever makes an admin
call (the platform operator, a user through a personal access token, an SSO session or a JWT, or a
virtual key acting for its own tenant). Roles map to permissions in one matrix, and every admin route
names the one permission it needs.
"""
