from loraplane.cli import main

raise SystemExit(main())
