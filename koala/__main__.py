from koala.cli import main

raise SystemExit(main())
