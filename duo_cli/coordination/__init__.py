"""Coordination: the step core, CoordEnv, the coordination problem (roles, BP, envs), the alpha grid."""
