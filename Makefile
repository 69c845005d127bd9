# make                 build the client (release)
# make install         install the client, the Perl and Python modules, the
#                      Ruby library, the manual pages and the bash, zsh and
#                      fish completions: PREFIX (/usr/local),
#                      DESTDIR, BINDIR, MANDIR, PERLDIR, PYTHON, RUBY, RUBYDIR
#                      (see tools/install.sh)
# make uninstall       remove exactly what install installed
# make deb             a Debian package, target/debian/prefork-interp_*.deb
#                      (tools/build-deb; tools/check-deb tries it out)
PREFIX ?= /usr/local
export PREFIX DESTDIR BINDIR MANDIR PERLDIR PYTHON RUBY RUBYDIR

all:
	cargo build --release --bin prefork-interp

install: all
	tools/install.sh install

uninstall:
	tools/install.sh uninstall

deb:
	tools/build-deb

.PHONY: all install uninstall deb
