from mirrorhub.cli import main

raise SystemExit(main())
