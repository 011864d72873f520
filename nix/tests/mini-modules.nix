# A small stand-in for nixpkgs' module system, so nix/module.nix and nix/topology.nix can be
# evaluated on machines without nixpkgs (Debian's nix-bin only). It follows the documented
# semantics the modules rely on: options and types with checks, definitions pushed down
# through mkIf/mkMerge/mkOverride without forcing conditions, priorities (mkForce 50 < plain
# 100 < mkDefault 1000 < option default 1500), list concatenation, per-name attrsOf merging,
# submodules with `name`, and imports. It is a test harness, not a replacement: the real
# lib.evalModules check runs where nixpkgs exists (flake checks, the VM test).
let
  inherit (builtins)
    all attrNames concatLists concatStringsSep elem filter foldl' head isAttrs isBool
    isFunction isInt isList isString length listToAttrs map tail toJSON typeOf;

  isOption = v: isAttrs v && (v._type or null) == "option";
  showLoc = loc: concatStringsSep "." loc;

  # --- properties ------------------------------------------------------------------------
  mkIf = condition: content: { _type = "if"; inherit condition content; };
  mkMerge = contents: { _type = "merge"; inherit contents; };
  mkOverride = priority: content: { _type = "override"; inherit priority content; };

  # Definitions found at `path` inside one module's config, properties kept (not evaluated).
  defsAt = path: v:
    let t = if isAttrs v then v._type or null else null; in
    if path == [ ] then [ v ]
    else if t == "if" then map (mkIf v.condition) (defsAt path v.content)
    else if t == "override" then map (mkOverride v.priority) (defsAt path v.content)
    else if t == "merge" then concatLists (map (defsAt path) v.contents)
    else if isAttrs v && v ? ${head path} then defsAt (tail path) v.${head path}
    else [ ];

  # Resolves properties into { priority, value } entries.
  discharge = priority: v:
    let t = if isAttrs v then v._type or null else null; in
    if t == "if" then (if v.condition then discharge priority v.content else [ ])
    else if t == "merge" then concatLists (map (discharge priority) v.contents)
    else if t == "override" then discharge v.priority v.content
    else [ { inherit priority; value = v; } ];

  minOf = xs: foldl' (a: b: if b < a then b else a) (head xs) xs;

  # Keeps the highest-priority definitions, checks them against `type`, merges them.
  mergeDefs = loc: type: raw:
    let
      defs = concatLists (map (discharge 100) raw);
      best = minOf (map (d: d.priority) defs);
      kept = map (d: d.value) (filter (d: d.priority == best) defs);
      bad = filter (v: !(type.check v)) kept;
    in
    if defs == [ ] then { defined = false; }
    else if bad != [ ] then throw "The option `${showLoc loc}' has a value of the wrong type (expected ${type.name}): ${toJSON (head bad)}"
    else { defined = true; value = type.merge loc kept; };

  # --- types -----------------------------------------------------------------------------
  equalMerge = loc: vs:
    if all (v: v == head vs) vs then head vs
    else throw "The option `${showLoc loc}' has conflicting definitions: ${toJSON vs}";

  simple = name: check: { inherit name check; merge = equalMerge; };

  types = rec {
    str = simple "string" isString;
    int = simple "int" isInt;
    bool = simple "bool" isBool;
    path = simple "path" (v: typeOf v == "path" || (isString v && builtins.substring 0 1 v == "/"));
    port = simple "port" (v: isInt v && v >= 0 && v <= 65535);
    package = simple "package" (v: isAttrs v && v ? outPath);
    enum = values: simple "one of ${toJSON values}" (v: elem v values);
    anything = {
      name = "anything";
      check = _: true;
      merge = loc: vs:
        if all isAttrs vs then (attrsOf anything).merge loc vs
        else if all isList vs then concatLists vs
        else equalMerge loc vs;
    };
    listOf = elemType: {
      name = "list of ${elemType.name}";
      check = v: isList v && all elemType.check v;
      merge = _loc: vs: concatLists vs;
    };
    attrsOf = elemType: {
      name = "attribute set of ${elemType.name}";
      check = isAttrs;
      merge = loc: vs:
        let
          names = attrNames (foldl' (a: b: a // b) { } vs);
          merged = map (n: { name = n; r = mergeDefs (loc ++ [ n ]) elemType (map (v: v.${n}) (filter (v: v ? ${n}) vs)); }) names;
        in
        listToAttrs (map (m: { inherit (m) name; value = m.r.value; }) (filter (m: m.r.defined) merged));
    };
    nullOr = t: {
      name = "null or ${t.name}";
      check = v: v == null || t.check v;
      merge = loc: vs:
        if all (v: v == null) vs then null
        else if elem null vs then throw "The option `${showLoc loc}' is defined both null and not null"
        else t.merge loc vs;
    };
    either = a: b: {
      name = "${a.name} or ${b.name}";
      check = v: a.check v || b.check v;
      merge = loc: vs:
        if all a.check vs then a.merge loc vs
        else if all b.check vs then b.merge loc vs
        else throw "The option `${showLoc loc}' has definitions of different types";
    };
    oneOf = ts: foldl' either (head ts) (tail ts);
    submodule = m: {
      name = "submodule";
      check = v: isAttrs v || isFunction v;
      merge = loc: vs: (evalModules { modules = [ m ] ++ vs; inherit loc; }).config;
    };
  };

  # --- lib -------------------------------------------------------------------------------
  lib = {
    inherit types mkIf mkMerge mkOverride;
    mkDefault = mkOverride 1000;
    mkForce = mkOverride 50;
    mkOption = attrs: attrs // { _type = "option"; };
    mkEnableOption = name: lib.mkOption { type = types.bool; default = false; description = "Whether to enable ${name}."; };
    literalExpression = text: { _type = "literalExpression"; inherit text; };
    optional = c: x: if c then [ x ] else [ ];
    optionalAttrs = c: x: if c then x else { };
    inherit filter attrNames concatStringsSep;
    mapAttrs = builtins.mapAttrs;
    escapeShellArgs = xs: concatStringsSep " " (map (x: "'${x}'") xs);
  };

  # --- evaluation ------------------------------------------------------------------------
  normalize = m:
    if m ? options || m ? config || m ? imports then { imports = m.imports or [ ]; options = m.options or { }; config = m.config or { }; }
    else { imports = [ ]; options = { }; config = m; };

  evalModules = { modules, loc ? [ ], pkgs ? { } }:
    let
      args = { inherit config lib pkgs; name = if loc == [ ] then null else builtins.elemAt loc (length loc - 1); };
      load = m:
        if typeOf m == "path" || isString m then load (import m)
        else normalize (if isFunction m then m args else m);
      collect = ms: concatLists (map (m: let n = load m; in [ n ] ++ collect n.imports) ms);
      all' = collect modules;
      mergeOptions = a: b:
        a // builtins.mapAttrs (k: v: if a ? ${k} && !(isOption v) && !(isOption a.${k}) then mergeOptions a.${k} v else v) b;
      options = foldl' mergeOptions { } (map (m: m.options) all');
      evalOption = path: opt:
        let r = mergeDefs (loc ++ path) opt.type (concatLists (map (m: defsAt path m.config) all')); in
        if r.defined then r.value
        else if opt ? default then opt.default
        else throw "The option `${showLoc (loc ++ path)}' is used but not defined.";
      build = path: tree:
        builtins.mapAttrs (n: v: if isOption v then evalOption (path ++ [ n ]) v else build (path ++ [ n ]) v) tree;
      # Like nixpkgs, a definition for an option nobody declared is an error (catches typos).
      checkDefs = path: tree: v:
        let t = if isAttrs v then v._type or null else null; in
        if t == "if" || t == "override" then checkDefs path tree v.content
        else if t == "merge" then all (checkDefs path tree) v.contents
        else if !(isAttrs v) then throw "`${showLoc (loc ++ path)}' is a set of options, not a value"
        else all
          (k:
            if !(tree ? ${k}) then throw "The option `${showLoc (loc ++ path ++ [ k ])}' does not exist."
            else isOption tree.${k} || checkDefs (path ++ [ k ]) tree.${k} v.${k})
          (attrNames v);
      checked = all (m: checkDefs [ ] options m.config) all';
      config = build [ ] options;
    in
    { inherit options; config = builtins.seq checked config; };
in
{ inherit lib evalModules; }
