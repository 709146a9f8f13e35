"""macho_imports.py BINARY SYMBOL... - checks that a 64-bit Mach-O executable imports (has as undefined
external symbols, bound by dyld at load time) every SYMBOL given, e.g. _thread_suspend. Reads LC_SYMTAB
directly (no llvm-nm needed). A stub that never calls the Mach API has no such imports and fails."""
import struct
import sys

MH_MAGIC_64, LC_SYMTAB, N_EXT, N_TYPE, N_UNDF = 0xFEEDFACF, 0x2, 0x01, 0x0E, 0x0


def imports(path):
    data = open(path, "rb").read()
    magic, _cpu, _sub, _ftype, ncmds, _size, _flags, _res = struct.unpack_from("<IiiIIIII", data, 0)
    if magic != MH_MAGIC_64:
        raise SystemExit("%s: not a 64-bit little-endian Mach-O file (magic 0x%x)" % (path, magic))
    off, out = 32, set()
    for _ in range(ncmds):
        cmd, cmdsize = struct.unpack_from("<II", data, off)
        if cmd == LC_SYMTAB:
            symoff, nsyms, stroff, _strsize = struct.unpack_from("<IIII", data, off + 8)
            for i in range(nsyms):
                strx, ntype, _sect, _desc, _value = struct.unpack_from("<IBBHQ", data, symoff + 16 * i)
                if (ntype & N_EXT) and (ntype & N_TYPE) == N_UNDF:
                    end = data.index(b"\0", stroff + strx)
                    out.add(data[stroff + strx:end].decode())
        off += cmdsize
    return out


def main(argv):
    have = imports(argv[0])
    missing = [s for s in argv[1:] if s not in have]
    if missing:
        print("  FAIL %s does not import: %s" % (argv[0], " ".join(missing)))
        return 1
    print("  ok   %s imports %s" % (argv[0], " ".join(argv[1:])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
