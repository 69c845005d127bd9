#!/usr/bin/env bash
# Installs or uninstalls prefork-interp: the client binary, the Perl
# modules (Proc::Prefork::Interp, its roles and ::Run: every file
# tools/module-files lists), the Python package (with pip), the Ruby
# library (prefork_interp.rb and prefork_interp/*.rb, the runner's
# among them: tools/module-files ruby), the manual pages and the bash, zsh
# and fish completion scripts (made by the client being installed,
# `$CLIENT --completions SHELL`, so that they match its options):
#   $PREFIX/share/bash-completion/completions/prefork-interp
#   $PREFIX/share/zsh/vendor-completions/_prefork-interp for PREFIX=/usr
#       (Debian's place for packaged zsh completions), else
#       $PREFIX/share/zsh/site-functions/_prefork-interp (zsh's fpath has
#       /usr/local/share/zsh/site-functions, not .../vendor-completions)
#   $PREFIX/share/fish/vendor_completions.d/prefork-interp.fish
#
#   tools/install.sh install     (what `make install` runs)
#   tools/install.sh uninstall   (what `make uninstall` runs)
#
# Variables, as make passes them:
#   PREFIX   default /usr/local
#   DESTDIR  staging root, default none
#   BINDIR   default $PREFIX/bin
#   MANDIR   default $PREFIX/share/man
#   PERLDIR  default: perl's vendor directory for PREFIX=/usr
#            (/usr/share/perl5), else its site directory moved under PREFIX
#            (/usr/local/share/perl/5.36.0 for /usr/local)
#   PYTHON   default python3; the module goes where
#            `$PYTHON -m pip install --prefix $PREFIX` puts it
#   RUBY     default ruby: asked for RUBYDIR's default
#   RUBYDIR  default: ruby's vendor directory for PREFIX=/usr
#            (/usr/lib/ruby/vendor_ruby, where Debian's ruby packages put
#            their libraries), else its site directory moved under PREFIX
#            (/usr/local/lib/site_ruby for /usr/local). Both are the
#            directories of every Ruby version (not .../site_ruby/3.1.0),
#            so the library stays found across an upgrade of ruby. With
#            no ruby to ask (and RUBYDIR unset) the Ruby library is left
#            out, and install says so.
#   CLIENT   the binary to install, default target/release/prefork-interp
#
# Every file installed is listed in $PREFIX/share/prefork-interp/installed-files;
# uninstall removes exactly those, then the directories left empty (never
# $PREFIX itself).
set -euo pipefail
cd "$(dirname "$0")/.."

PREFIX=${PREFIX:-/usr/local}
DESTDIR=${DESTDIR:-}
BINDIR=${BINDIR:-$PREFIX/bin}
MANDIR=${MANDIR:-$PREFIX/share/man}
PYTHON=${PYTHON:-python3}
CLIENT=${CLIENT:-target/release/prefork-interp}
if [ -z "${PERLDIR:-}" ]; then
    if [ "$PREFIX" = /usr ]; then
        PERLDIR=$(perl -MConfig -e 'print $Config{installvendorlib}')
    else
        PERLDIR=$(perl -MConfig -e 'my $d = $Config{installsitelib};
            $d =~ s/^\Q$Config{siteprefix}\E/$ARGV[0]/; print $d' "$PREFIX")
    fi
fi
RUBY=${RUBY:-ruby}
if [ -z "${RUBYDIR:-}" ] && command -v "$RUBY" >/dev/null; then
    if [ "$PREFIX" = /usr ]; then
        RUBYDIR=$("$RUBY" -rrbconfig -e 'c = RbConfig::CONFIG; print c["vendordir"] || c["sitedir"]')
    else
        # Debian's site directory is under /usr/local, a Ruby built from
        # source has it under its own prefix: either is PREFIX's part.
        RUBYDIR=$("$RUBY" -rrbconfig -e 'c = RbConfig::CONFIG; dir = c["sitedir"]
            from = ["/usr/local", c["prefix"]].find { |p| dir.start_with?("#{p}/") }
            print from ? ARGV[0] + dir.delete_prefix(from) : File.join(ARGV[0], "lib/site_ruby")' \
            "$PREFIX")
    fi
fi
MANIFEST=$PREFIX/share/prefork-interp/installed-files

die() { echo "install.sh: $*" >&2; exit 1; }

# put SOURCE DEST MODE: installs one file and lists it.
put() {
    install -D -m "$3" "$1" "$DESTDIR$2"
    echo "$2" >> "$LISTED"
}

do_install() {
    [ -x "$CLIENT" ] || die "$CLIENT is missing: run cargo build --release (or make) first"
    LISTED=$(mktemp)
    GENERATED=$(mktemp -d)
    trap 'rm -f "$LISTED"; rm -rf "$GENERATED"' EXIT

    put "$CLIENT" "$BINDIR/prefork-interp" 755
    local module
    for module in $(tools/module-files perl); do
        put "sides/perl/lib/$module" "$PERLDIR/$module" 644
    done
    if [ -n "${RUBYDIR:-}" ]; then
        for module in $(tools/module-files ruby); do
            put "sides/ruby/lib/$module" "$RUBYDIR/$module" 644
        done
    else
        echo "install.sh: no $RUBY found: the Ruby library is not installed (set RUBYDIR to install it)" >&2
    fi
    put man/prefork-interp.1 "$MANDIR/man1/prefork-interp.1" 644
    put man/prefork-interp.7 "$MANDIR/man7/prefork-interp.7" 644
    put "man/Proc::Prefork::Interp.3pm" "$MANDIR/man3/Proc::Prefork::Interp.3pm" 644
    put man/prefork_interp.3 "$MANDIR/man3/prefork_interp.3" 644
    put man/prefork_interp.3rb "$MANDIR/man3/prefork_interp.3rb" 644
    local shell zshdir=$PREFIX/share/zsh/site-functions
    [ "$PREFIX" != /usr ] || zshdir=$PREFIX/share/zsh/vendor-completions
    for shell in bash zsh fish; do
        "$CLIENT" --completions "$shell" > "$GENERATED/$shell" \
            || die "$CLIENT --completions $shell failed"
    done
    put "$GENERATED/bash" "$PREFIX/share/bash-completion/completions/prefork-interp" 644
    put "$GENERATED/zsh" "$zshdir/_prefork-interp" 644
    put "$GENERATED/fish" "$PREFIX/share/fish/vendor_completions.d/prefork-interp.fish" 644

    # pip builds from a copy, so that no build/ lands in the tree, and
    # installs under DESTDIR; its RECORD then says what it wrote. The
    # module alone (PREFORK_INTERP_CLIENT=omit): the client is installed
    # above, not built a second time into the wheel (sides/python/setup.py).
    BUILD=$(mktemp -d)
    trap 'rm -f "$LISTED"; rm -rf "$GENERATED" "$BUILD"' EXIT
    cp -r sides/python/pyproject.toml sides/python/setup.py sides/python/README.md \
        sides/python/prefork_interp sides/python/prefork_interp_early.pth "$BUILD/"
    rm -rf "$BUILD/prefork_interp/__pycache__"
    PIP_BREAK_SYSTEM_PACKAGES=1 PREFORK_INTERP_CLIENT=omit "$PYTHON" -m pip install --quiet --no-deps \
        --disable-pip-version-check --no-warn-script-location --no-compile \
        --root "${DESTDIR:-/}" --prefix "$PREFIX" "$BUILD" \
        || die "pip could not install the Python module"
    local record site
    record=$(find "$DESTDIR$PREFIX" -path '*/prefork_interp-*.dist-info/RECORD' | head -n 1)
    [ -n "$record" ] || die "pip left no RECORD under $DESTDIR$PREFIX"
    site=$(dirname "$(dirname "$record")")
    while IFS=, read -r path _; do
        echo "${site#"$DESTDIR"}/$path" >> "$LISTED"
    done < "$record"

    echo "$MANIFEST" >> "$LISTED"
    install -D -m 644 "$LISTED" "$DESTDIR$MANIFEST"
    echo "installed prefork-interp under ${DESTDIR}$PREFIX (list: $MANIFEST)"
}

do_uninstall() {
    [ -f "$DESTDIR$MANIFEST" ] || die "nothing to uninstall: $DESTDIR$MANIFEST is missing"
    local dirs=()
    while read -r path; do
        rm -f "$DESTDIR$path"
        dirs+=("$(dirname "$path")")
    done < "$DESTDIR$MANIFEST"
    # Directories left empty, deepest first, up to (not including) PREFIX.
    for dir in "${dirs[@]}"; do
        while [ "$dir" != "$PREFIX" ] && [ "$dir" != / ] && [ "${dir#"$PREFIX"/}" != "$dir" ]; do
            rmdir "$DESTDIR$dir" 2>/dev/null || break
            dir=$(dirname "$dir")
        done
    done
    echo "uninstalled prefork-interp from ${DESTDIR}$PREFIX"
}

case "${1:-}" in
    install) do_install ;;
    uninstall) do_uninstall ;;
    *) die "usage: tools/install.sh install|uninstall" ;;
esac
