from prodline.cli.main import main

raise SystemExit(main())
