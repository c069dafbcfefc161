"""Coordination: CoordEnv, the YRC-0 roles and BP, the CoordEnv factory, the alpha grid."""
