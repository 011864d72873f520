# Applies the package's source filter (nix/source-filter.nix) to a list of repository files the
# way lib.cleanSourceWith does: a file is kept only if every directory above it and the file
# itself pass. Run by tests/nix_eval.rs:
#   nix-instantiate --eval --strict --json --store dummy:// nix/tests/source-filter.nix \
#     --argstr files "$(git ls-files)"
# -> the kept files, in the given order.
{ files }:
let
  root = "/source-root";
  filter = import ../source-filter.nix { inherit root; };
  split = f: builtins.filter builtins.isString (builtins.split "/" f);
  dirsOf = f:
    let parts = split f; n = builtins.length parts; in
    builtins.genList (i: builtins.concatStringsSep "/" (builtins.genList (j: builtins.elemAt parts j) (i + 1))) (n - 1);
  kept = f:
    builtins.all (d: filter "${root}/${d}" "directory") (dirsOf f)
    && filter "${root}/${f}" "regular";
in
builtins.filter kept (builtins.filter (f: f != "") (builtins.filter builtins.isString (builtins.split "\n" files)))
