"""`python -m zhongshu.contracts --write|--check docs`, same as `zhongshu.contracts.schema`."""

from zhongshu.contracts.schema import main

raise SystemExit(main())
