# make                 build the client (release)
# make install         install the client, the Perl and Python modules and
#                      the manual pages: PREFIX (/usr/local), DESTDIR,
#                      BINDIR, MANDIR, PERLDIR, PYTHON (see scripts/install.sh)
# make uninstall       remove exactly what install installed
# make deb             a Debian package, target/debian/prefork-interp_*.deb
#                      (scripts/build-deb; scripts/check-deb tries it out)
PREFIX ?= /usr/local
export PREFIX DESTDIR BINDIR MANDIR PERLDIR PYTHON

all:
	cargo build --release --bin prefork-interp

install: all
	scripts/install.sh install

uninstall:
	scripts/install.sh uninstall

deb:
	scripts/build-deb

.PHONY: all install uninstall deb
