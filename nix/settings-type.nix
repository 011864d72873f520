# The option type of rke2 `settings` attribute sets (services.rke2.settings and the topology's
# cluster-wide and per-node settings): config.yaml keys to a scalar, a list of scalars, or (for
# node-label) an attribute set. Key names and shapes are checked against the daemon's table by
# lib.nix's settingsErrors, which gives messages naming the key.
{ lib }:
let
  inherit (lib) types;
  scalar = types.oneOf [ types.str types.int types.bool types.path ];
in
types.attrsOf (types.nullOr (types.oneOf [ scalar (types.listOf scalar) (types.attrsOf types.str) ]))
