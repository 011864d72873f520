#!/usr/bin/env bash
# Regenerates the protobuf data under proto/ (see proto/README.md):
#   proto/k8s.fds        the descriptor set of the vendored generated.proto files (protoc);
#   proto/omitempty.txt  the Go fields that are non-pointer numbers or booleans with `omitempty`
#                        (Go's JSON leaves their zero value out, while its protobuf encoder always
#                        writes them), read from upstream's types*.go.
# Usage: scripts/gen-proto-descriptors.sh <k8s.io/api checkout> <k8s.io/apimachinery checkout>
set -euo pipefail
api=$(realpath "$1"); machinery=$(realpath "$2")
cd "$(dirname "$0")/../proto"
protoc -I . --include_imports -o k8s.fds $(find . -name generated.proto | sed 's|^\./||' | sort) 2>/dev/null
python3 - "$api" "$machinery" > omitempty.txt <<'PY'
import glob, os, re, sys
api, machinery = sys.argv[1:3]
field = re.compile(r'^\s+\w+\s+(\S+)\s+`json:"([^"]*)"\s+protobuf:"([^"]*)"')
out = set()
for proto in sorted(glob.glob('k8s.io/*/**/generated.proto', recursive=True)):
    rel = os.path.dirname(proto)
    src = rel.replace('k8s.io/api/', api + '/').replace('k8s.io/apimachinery/', machinery + '/')
    pkg = re.search(r'^package ([\w.]+);', open(proto).read(), re.M).group(1)
    for go in sorted(glob.glob(os.path.join(src, 'types*.go')) + glob.glob(os.path.join(src, 'time.go'))):
        if go.endswith('_test.go'):
            continue
        struct = None
        for line in open(go):
            m = re.match(r'^type (\w+) struct', line)
            if m:
                struct = m.group(1)
                continue
            if line.startswith('}'):
                struct = None
                continue
            m = field.match(line)
            if not (struct and m):
                continue
            gotype, jsontag, pbtag = m.groups()
            name = re.search(r'name=(\w+)', pbtag)
            if ('omitempty' in jsontag.split(',')[1:] and name and not gotype.startswith(('*', '[]', 'map['))
                    and (pbtag.startswith(('varint', 'fixed'))
                         or re.fullmatch(r'u?int\d*|bool|float\d+', gotype))):
                out.add(f'{pkg}.{struct}.{name.group(1)}')
print('\n'.join(sorted(out)))
PY
