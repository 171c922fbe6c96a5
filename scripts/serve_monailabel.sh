#!/usr/bin/env bash
# Serves the three bundles in MONAI Label (monailabel_app/) on a folder of images or a PACS (DICOMweb), from
# .venv-monailabel (scripts/setup_monailabel.sh creates it), behind the project's guard (monailabel_app/server_guard.py).
# Bound to 127.0.0.1 unless --host says otherwise; on any other address it needs a token (--token_file) or MONAI
# Label's own login (MONAI_LABEL_AUTH_ENABLE=true). See docs/monailabel.md.
#
#   bash scripts/serve_monailabel.sh --studies <folder of images | DICOMweb URL> [--port 8000] [--host 127.0.0.1]
#        [--bundles <folder of bundle folders>] [--configs quick] [--models a,b] [--cors <origin,origin>]
#        [--allowed_hosts <name,name>] [--token_file <file>] [--max_upload_mb 1024]
#        [--dicomweb_credentials <file>] [--allow_insecure_dicomweb] [--modalities CT,DX,CR]
#        [other monailabel start_server options]
#
# --studies http(s)://host[:port]/<path>: a PACS's DICOMweb root (e.g. http://127.0.0.1:8042/dicom-web for
# scripts/orthanc.sh); image ids are then its Series Instance UIDs and a label saved with the tag final goes back to
# it as a DICOM SEG. --modalities: the modalities of the series served (one QIDO-RS search each); default those of the
# served bundles: CT for the segmentation bundle, DX and CR (one radiograph per series) for the chest X-ray classifier. --dicomweb_credentials: a file 'user:password' (mode 0600) to log in there (only its path reaches
# the server; monailabel_app/dicomweb_access.py). The URL holds no user or password; plain http only to a loopback
# host unless --allow_insecure_dicomweb (the password and the images would cross the network in clear). The series
# are cached in the server's private temporary folder, removed when it stops.
#
# --bundles: where the bundle folders (with models/model.pt) are, default bundles/; --configs: override files of each
# bundle's configs/, e.g. quick for weights trained with configs/quick.yaml (each bundle is then served from a copy
# under <app>/model/ with them baked in, its models/ linked to the bundle's); --models: bundles to serve, default all.
# --cors: the web origins (http[s]://host[:port]) whose pages may call the server from a browser; default
# http://127.0.0.1:<port> and http://localhost:<port> only. --allowed_hosts: names clients use for this server (the
# Host header; loopback names and --host are always allowed). --token_file: every request but GET /health then needs
# 'Authorization: Bearer <the file's token>'; the file is created (mode 0600, a random token) if absent.
# --max_upload_mb: the largest image or label a client may upload.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${MONAILABEL_VENV:-$root/.venv-monailabel}"
studies="" host="127.0.0.1" port="8000" app="$root/monailabel_app" bundles="$root/bundles" configs="" models="" cors=""
allowed_hosts="" token_file="" max_upload_mb="1024" dicomweb_credentials="" allow_insecure_dicomweb=0 modalities=""
extra=()
die() { echo "serve_monailabel.sh: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
    case "$1" in
        --studies|--host|--port|--app|--bundles|--configs|--models|--cors|--allowed_hosts|--token_file|--max_upload_mb|\
        --dicomweb_credentials|--modalities)
            [ $# -ge 2 ] || die "$1 needs a value"
            declare "${1#--}=$2"
            shift 2
            ;;
        --allow_insecure_dicomweb) allow_insecure_dicomweb=1; shift ;;
        --uvicorn_app|--uvicorn_app=*) die "--uvicorn_app is the guard's (monailabel_app/guarded_server.py)" ;;
        *) extra+=("$1"); shift ;;
    esac
done
[ -n "$studies" ] || die "--studies <folder of images | DICOMweb URL> is required (NIfTI volumes, PNG radiographs)"
dicomweb=0
if [[ "$studies" == *://* ]]; then
    [[ "$studies" == http://* || "$studies" == https://* ]] \
        || die "--studies takes a folder or a DICOMweb URL http(s)://...; got '${studies%%://*}://...'"
    dicomweb=1
elif [ -n "$dicomweb_credentials" ] || [ "$allow_insecure_dicomweb" = 1 ] || [ -n "$modalities" ]; then
    die "--dicomweb_credentials, --allow_insecure_dicomweb and --modalities go with --studies <DICOMweb URL>"
fi
[ -z "$modalities" ] || [[ "$modalities" =~ ^[A-Z0-9_]{1,16}(,[A-Z0-9_]{1,16})*$ ]] \
    || die "--modalities takes DICOM modalities, comma-separated (e.g. DX,CR); got '$modalities'"
[[ "${MONAI_LABEL_DICOMWEB_SEARCH_FILTER:-}" != *Modality* ]] \
    || die "MONAI_LABEL_DICOMWEB_SEARCH_FILTER names a Modality: give the modalities as --modalities (e.g. DX,CR)"
for var in MONAI_LABEL_DICOMWEB_USERNAME MONAI_LABEL_DICOMWEB_PASSWORD MONAI_LABEL_DATASTORE_USERNAME \
    MONAI_LABEL_DATASTORE_PASSWORD MONAI_LABEL_DATASTORE; do
    [ -z "${!var:-}" ] || die "$var is set: give the PACS login as a file (--dicomweb_credentials FILE, mode 0600)"
done
[[ "$port" =~ ^[0-9]{1,5}$ ]] || die "--port takes a number; got '$port'"
[[ "$max_upload_mb" =~ ^[0-9]{1,6}$ ]] || die "--max_upload_mb takes a number; got '$max_upload_mb'"
if ! "$venv/bin/python" -c "import importlib.util as u, sys; sys.exit(u.find_spec('monailabel') is None)" 2>/dev/null; then
    echo "serve_monailabel.sh: $venv has no monailabel: run bash scripts/setup_monailabel.sh first" >&2
    exit 1
fi
if [ "$dicomweb" = 1 ]; then
    if [ -n "$dicomweb_credentials" ]; then
        [ -f "$dicomweb_credentials" ] && [ ! -L "$dicomweb_credentials" ] && [ -O "$dicomweb_credentials" ] \
            && [ "$(stat -c %a "$dicomweb_credentials")" = 600 ] \
            || die "--dicomweb_credentials $dicomweb_credentials must be a regular file of this user with mode 0600 (chmod 600 it)"
        dicomweb_credentials="$(cd "$(dirname "$dicomweb_credentials")" && pwd -P)/$(basename "$dicomweb_credentials")"
    fi
    check=("$venv/bin/python" "$app/dicomweb_access.py" --url "$studies")
    [ -z "$dicomweb_credentials" ] || check+=(--credentials "$dicomweb_credentials")
    [ "$allow_insecure_dicomweb" = 0 ] || check+=(--allow_insecure)
    "${check[@]}" || exit 2
else
    mkdir -p "$studies"
    studies="$(cd "$studies" && pwd -P)"
fi
app="$(cd "$app" && pwd -P)" bundles="$(cd "$bundles" && pwd -P)"

# who may call: the Host names, browser origins, and a token when reachable from other machines
host_re='^[][A-Za-z0-9.:-]+$'
[[ "$host" =~ $host_re ]] || die "--host takes a host name or address; got '$host'"
case "$host" in
    127.*|localhost|::1|'[::1]') loopback=1 ;;
    *) loopback=0 ;;
esac
if [ "$loopback" = 0 ] && [ -z "$token_file" ] && [ "${MONAI_LABEL_AUTH_ENABLE:-false}" != "true" ]; then
    die "--host $host makes the server reachable from other machines: give --token_file <file> (or turn on MONAI Label's login, MONAI_LABEL_AUTH_ENABLE=true); see docs/monailabel.md"
fi
IFS=, read -r -a host_list <<<"$allowed_hosts"
for h in "${host_list[@]}"; do [[ "$h" =~ $host_re ]] || die "--allowed_hosts takes host names; got '$h'"; done
case "$host" in 0.0.0.0|::|'[::]') ;; *) allowed_hosts="$host${allowed_hosts:+,$allowed_hosts}" ;; esac
[ -n "$cors" ] || cors="http://127.0.0.1:$port,http://localhost:$port"
origin_re='^https?://[][A-Za-z0-9.:-]+$'  # scheme://host[:port], IPv6 hosts in brackets
IFS=, read -r -a cors_list <<<"$cors"
for origin in "${cors_list[@]}"; do
    [[ "$origin" =~ $origin_re ]] || die "--cors takes origins http[s]://host[:port], comma-separated; got '$origin'"
done
if [ -n "$token_file" ]; then
    token_file="$(cd "$(dirname "$token_file")" && pwd -P)/$(basename "$token_file")"
    if [ ! -e "$token_file" ]; then
        (umask 077 && "$venv/bin/python" -c "import secrets; print(secrets.token_urlsafe(32))" > "$token_file")
        echo "serve_monailabel.sh: a new token is in $token_file (mode 0600)" >&2
    fi
    [ -f "$token_file" ] && [ -O "$token_file" ] && [ "$(stat -c %a "$token_file")" = 600 ] \
        || die "--token_file $token_file must be a regular file of this user with mode 0600 (chmod 600 it)"
fi
export MAE_MONAILABEL_HOSTS="$allowed_hosts" MAE_MONAILABEL_ORIGINS="$cors" MAE_MONAILABEL_TOKEN_FILE="$token_file"
export MAE_MONAILABEL_MAX_UPLOAD_MB="$max_upload_mb" MONAI_LABEL_SESSIONS=false
# the PACS login's file (its path only: the app reads it) and whether plain http may leave this machine
export MAE_MONAILABEL_DICOMWEB_CREDENTIALS="$dicomweb_credentials"
export MAE_MONAILABEL_DICOMWEB_INSECURE="$allow_insecure_dicomweb"

# a private temporary folder (uploads are checked there), removed when the server stops
tmp="$(mktemp -d "${TMPDIR:-/tmp}/mae-monailabel.XXXXXX")"
export TMPDIR="$tmp"
datastore="$studies"
if [ "$dicomweb" = 1 ]; then  # the cache of the PACS's series and labels: in the private folder
    datastore="$tmp/dicomweb"
    mkdir "$datastore"
    export MONAI_LABEL_DICOMWEB_CACHE_PATH="$datastore"
fi
export PYTHONPATH="$app${PYTHONPATH:+:$PYTHONPATH}"  # guarded_server (MONAI Label adds the app folder too)
cd "$app"  # python -m imports from the working directory: the app's own folder, never the datastore
"$venv/bin/python" "$app/layout.py" --studies "$datastore" --app "$app" --bundles "$bundles" --tmpdir "$tmp" \
    || { rm -rf "$tmp"; exit 2; }
conf=(--conf zoo_source local --conf bundles "$bundles")
[ -z "$configs" ] || conf+=(--conf configs "$configs")
[ -z "$models" ] || conf+=(--conf models "$models")
[ -z "$modalities" ] || conf+=(--conf modalities "$modalities")
# the CLI of the `monailabel` command, run by this environment's python (the command itself runs `python` from PATH)
"$venv/bin/python" -m monailabel.main start_server --app "$app" --studies "$studies" --host "$host" --port "$port" \
    --uvicorn_app guarded_server:app "${conf[@]}" "${extra[@]}" &
server=$!
# (each step may fail, the server being gone already: set -e must not skip the removal)
trap 'kill -TERM "$server" 2>/dev/null || true; wait "$server" || true; rm -rf "$tmp"' EXIT
trap 'exit 143' TERM INT
wait "$server"
