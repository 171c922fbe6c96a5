#!/usr/bin/env bash
# Serves the three bundles in MONAI Label (monailabel_app/) on a folder of images, from .venv-monailabel
# (scripts/setup_monailabel.sh creates it). Bound to 127.0.0.1 unless --host says otherwise.
#
#   bash scripts/serve_monailabel.sh --studies <folder of images> [--port 8000] [--host 127.0.0.1]
#        [--bundles <folder of bundle folders>] [--configs quick] [--models a,b] [--cors <origin,origin>]
#        [other monailabel start_server options]
#
# --bundles: where the bundle folders (with models/model.pt) are, default bundles/; --configs: override files of each
# bundle's configs/, e.g. quick for weights trained with configs/quick.yaml (each bundle is then served from a copy
# under <app>/model/ with them baked in, its models/ linked to the bundle's); --models: bundles to serve, default all.
# --cors: the web origins (http[s]://host[:port]) whose pages may call the server from a browser; default
# http://127.0.0.1:<port> and http://localhost:<port> only (MONAI Label's own default is every origin). Requests
# without an Origin header (3D Slicer, scripts) are not concerned. The server has no login unless
# MONAI_LABEL_AUTH_ENABLE=true (see README.md, "Serving in MONAI Label").
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${MONAILABEL_VENV:-$root/.venv-monailabel}"
studies="" host="127.0.0.1" port="8000" app="$root/monailabel_app" bundles="$root/bundles" configs="" models="" cors=""
extra=()
while [ $# -gt 0 ]; do
    case "$1" in
        --studies|--host|--port|--app|--bundles|--configs|--models|--cors)
            [ $# -ge 2 ] || { echo "serve_monailabel.sh: $1 needs a value" >&2; exit 2; }
            declare "${1#--}=$2"
            shift 2
            ;;
        *) extra+=("$1"); shift ;;
    esac
done
if [ -z "$studies" ]; then
    echo "serve_monailabel.sh: --studies <folder of images> is required (NIfTI volumes, PNG radiographs)" >&2
    exit 2
fi
if ! "$venv/bin/python" -c "import importlib.util as u, sys; sys.exit(u.find_spec('monailabel') is None)" 2>/dev/null; then
    echo "serve_monailabel.sh: $venv has no monailabel: run bash scripts/setup_monailabel.sh first" >&2
    exit 1
fi
# browser origins allowed to call the server (monailabel_app/origin_guard.py answers others 403; MONAI Label itself
# answers every origin's CORS preflight, and fails to start when MONAI_LABEL_CORS_ORIGINS is set)
[ -n "$cors" ] || cors="http://127.0.0.1:$port,http://localhost:$port"
origin_re='^https?://[][A-Za-z0-9.:-]+$'  # scheme://host[:port], IPv6 hosts in brackets
IFS=, read -r -a cors_list <<<"$cors"
for origin in "${cors_list[@]}"; do
    if ! [[ "$origin" =~ $origin_re ]]; then
        echo "serve_monailabel.sh: --cors takes origins http[s]://host[:port], comma-separated; got '$origin'" >&2
        exit 2
    fi
done
export MAE_MONAILABEL_ORIGINS="$cors"
export PYTHONPATH="$app${PYTHONPATH:+:$PYTHONPATH}"  # origin_guard (MONAI Label adds the app folder too)
conf=(--conf zoo_source local --conf bundles "$bundles")
[ -z "$configs" ] || conf+=(--conf configs "$configs")
[ -z "$models" ] || conf+=(--conf models "$models")
# the CLI of the `monailabel` command, run by this environment's python (the command itself runs `python` from PATH)
exec "$venv/bin/python" -m monailabel.main start_server --app "$app" --studies "$studies" --host "$host" --port "$port" \
    --uvicorn_app origin_guard:app "${conf[@]}" "${extra[@]}"
